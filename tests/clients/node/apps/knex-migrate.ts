// A Knex migration as seed 002 runs it: straight to the primary on the
// binding's direct DATABASE_URL (node-postgres reads its sslmode).
import knex from "knex";
import { args, counter, done, need } from "./common.ts";

const report = counter(args().pod);
const db = knex({ client: "pg", connection: need("DATABASE_URL"), pool: { min: 0, max: 1 } });
try {
  await db.raw("CREATE INDEX IF NOT EXISTS orders_pod ON orders (pod)");
  report.queries += 1;
} catch (err) {
  report.fail(err);
}
await db.destroy();
done(report);
