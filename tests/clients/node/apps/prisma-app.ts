// An app pod of seed 000's kind: Next.js-style Prisma 7 with @prisma/adapter-pg
// and a BullMQ producer, written as docs/api.md ("The binding", prisma) shows.
import { PrismaPg } from "@prisma/adapter-pg";
import { Queue } from "bullmq";
import IORedis from "ioredis";
import { PrismaClient } from "../generated/prisma/client.ts";
import { TX_LIMITS, args, atCeiling, counter, done, need, ready } from "./common.ts";

const { pod, jobs } = args();
const report = counter(pod);

// Prisma 7 hands the URL to pg.Pool, which ignores connection_limit: pass max.
const adapter = new PrismaPg({
  connectionString: need("DATABASE_URL"),
  max: Number(need("DATABASE_POOL_SIZE")),
});
const prisma = new PrismaClient({ adapter });
const connection = new IORedis(need("REDIS_QUEUE_URL"), { maxRetriesPerRequest: null });
const emails = new Queue("emails", { connection });

for (let i = 0; i < jobs; i++) {
  await emails.add("welcome", { to: `${pod}-${i}@example.test` }, { jobId: `${pod}-${i}` });
}
report.jobs = jobs;

const size = Number(need("DATABASE_POOL_SIZE"));
const { until } = await ready();
await atCeiling(
  size,
  until,
  async () => {
    await prisma.$transaction(async (tx) => {
      const order = await tx.order.create({ data: { pod, amount: 1 } });
      await tx.$executeRaw`SELECT pg_sleep(0.02)`;
      await tx.order.findUnique({ where: { id: order.id } });
    }, TX_LIMITS);
    await prisma.order.count({ where: { pod } });
    report.queries += 1;
  },
  report.fail,
);
await emails.close();
await connection.quit();
await prisma.$disconnect();
done(report);
