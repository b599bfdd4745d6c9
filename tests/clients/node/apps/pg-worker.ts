// A queue worker pod on node-postgres (pg.Pool) and BullMQ, configured by its
// own binding.
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";
import pg from "pg";
import { args, counter, done, need, track, workUntilDrained } from "./common.ts";

const { pod } = args();
const report = counter(pod);
const size = Number(need("DATABASE_POOL_SIZE"));
const pool = new pg.Pool({ connectionString: need("DATABASE_URL_POOLED"), max: size });
const connection = new IORedis(need("REDIS_QUEUE_URL"), { maxRetriesPerRequest: null });
const worker = new Worker(
  need("QUEUE_NAME"),
  async (job) => {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await client.query("SELECT pg_sleep(0.02)");
      await client.query(
        "INSERT INTO jobs_done (job_id, worker) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [job.id, pod],
      );
      await client.query("COMMIT");
    } finally {
      client.release();
    }
  },
  { connection, prefix: process.env.QUEUE_PREFIX, concurrency: size },
);
track(worker, report);
const queue = new Queue(need("QUEUE_NAME"), { connection, prefix: process.env.QUEUE_PREFIX });
await workUntilDrained(queue);
await queue.close();
await worker.close();
await connection.quit();
await pool.end();
done(report);
