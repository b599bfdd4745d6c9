// An app pod of seed 002's kind: Express + Knex on node-postgres, plus a
// BullMQ producer, written as docs/api.md ("The binding", node-postgres) shows.
import { Queue } from "bullmq";
import IORedis from "ioredis";
import knex from "knex";
import { args, atCeiling, counter, done, need, ready } from "./common.ts";

const { pod, jobs } = args();
const report = counter(pod);
const size = Number(need("DATABASE_POOL_SIZE"));
const db = knex({
  client: "pg",
  connection: need("DATABASE_URL_POOLED"),
  pool: { min: 0, max: size },
});
const connection = new IORedis(need("REDIS_QUEUE_URL"), { maxRetriesPerRequest: null });
const emails = new Queue("emails", { connection });
for (let i = 0; i < jobs; i++) {
  await emails.add("welcome", { to: `${pod}-${i}@example.test` }, { jobId: `${pod}-${i}` });
}
report.jobs = jobs;

const { until } = await ready();
await atCeiling(
  size,
  until,
  async () => {
    await db.transaction(async (trx) => {
      const [row] = await trx("orders").insert({ pod, amount: 1 }).returning("id");
      await trx.raw("SELECT pg_sleep(0.02)");
      await trx("orders").where({ id: row.id }).first();
    });
    await db("orders").where({ pod }).count();
    report.queries += 1;
  },
  report.fail,
);
await emails.close();
await connection.quit();
await db.destroy();
done(report);
