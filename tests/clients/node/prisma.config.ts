// Prisma 7 reads the CLI's connection (migrations, introspection) from here,
// not from schema.prisma: the binding's direct URL, as docs/api.md shows.
import { defineConfig, env } from "prisma/config";

export default defineConfig({
  schema: "prisma/schema.prisma",
  datasource: { url: env("DIRECT_URL") },
});
