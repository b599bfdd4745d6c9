// A queue worker pod of seed 000's kind: BullMQ on ioredis, Prisma 7 with
// adapter-pg, configured by its own binding (<profile>-worker-<queue>-binding).
import { PrismaPg } from "@prisma/adapter-pg";
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";
import { PrismaClient } from "../generated/prisma/client.ts";
import { TX_LIMITS, args, counter, done, need, track, workUntilDrained } from "./common.ts";

const { pod } = args();
const report = counter(pod);

const size = Number(need("DATABASE_POOL_SIZE"));
const prisma = new PrismaClient({
  adapter: new PrismaPg({ connectionString: need("DATABASE_URL"), max: size }),
});
const connection = new IORedis(need("REDIS_QUEUE_URL"), { maxRetriesPerRequest: null });
const worker = new Worker(
  need("QUEUE_NAME"),
  async (job) => {
    await prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SELECT pg_sleep(0.02)`;
      await tx.$executeRaw`INSERT INTO jobs_done (job_id, worker) VALUES (${job.id}, ${pod}) ON CONFLICT DO NOTHING`;
    }, TX_LIMITS);
  },
  { connection, prefix: process.env.QUEUE_PREFIX, concurrency: size },
);
track(worker, report);

const queue = new Queue(need("QUEUE_NAME"), { connection, prefix: process.env.QUEUE_PREFIX });
await workUntilDrained(queue);
await queue.close();
await worker.close(); // waits for the jobs in flight
await connection.quit();
await prisma.$disconnect();
done(report);
