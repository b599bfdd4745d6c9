// A BullMQ queue brought to a declared state, for measuring what it holds in Redis:
// jobs of a given size kept as the app's removeOnComplete/removeOnFail say, some
// running (held by a Worker until stdin closes) and some waiting behind them.
// Connects by the binding's REDIS_QUEUE_URL; the shape comes from the command line:
//   --queue NAME --data-bytes D --return-bytes R --kept-completed K --kept-failed F
//   --completed C --failed X --active A --waiting W --events-max-len E
// It processes C jobs that return R bytes and X that fail (C > K and X > F, so the
// sets are trimmed), then holds A jobs running with W waiting, prints
// "REPORT {counts}" and waits for stdin to close.
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";
import { createInterface } from "node:readline";
import { need } from "./common.ts";

const flag = (name: string): number => {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) throw new Error(`--${name} is missing`);
  return Number(process.argv[at + 1]);
};
const name = process.argv[process.argv.indexOf("--queue") + 1];
const [dataBytes, returnBytes] = [flag("data-bytes"), flag("return-bytes")];
const [keptCompleted, keptFailed] = [flag("kept-completed"), flag("kept-failed")];
const [completed, failed, active, waiting] = [flag("completed"), flag("failed"), flag("active"), flag("waiting")];

// JSON.stringify of {p: "x".repeat(n)} is n + 8 characters: the return value (and,
// with its kind, the job's data) are exactly the bytes given
const payload = (bytes: number) => ({ p: "x".repeat(Math.max(0, bytes - 8)) });
const connection = new IORedis(need("REDIS_QUEUE_URL"), { maxRetriesPerRequest: null });
const queue = new Queue(name, {
  connection,
  streams: { events: { maxLen: flag("events-max-len") } },
  defaultJobOptions: { removeOnComplete: keptCompleted, removeOnFail: keptFailed },
});
await queue.waitUntilReady();

let release: () => void = () => {};
const held = new Promise<void>((resolve) => {
  release = resolve;
});
let started = 0;
const worker = new Worker(
  name,
  async (job) => {
    if (job.data.kind === "fail") throw new Error("declared failure");
    if (job.data.kind === "hold") {
      started += 1;
      await held;
    }
    return payload(returnBytes);
  },
  { connection: connection.duplicate(), concurrency: Math.max(active, 1) },
);

const jobData = (kind: string) => {
  const bare = JSON.stringify({ kind, p: "" }).length;
  return { kind, p: "x".repeat(Math.max(0, dataBytes - bare)) };
};
const add = async (count: number, kind: string) => {
  for (let first = 0; first < count; first += 500) {
    const size = Math.min(500, count - first);
    await queue.addBulk(Array.from({ length: size }, () => ({ name: "j", data: jobData(kind) })));
  }
};
const until = async (check: () => Promise<boolean>) => {
  const deadline = Date.now() + 120_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("the queue did not reach its state in 120 s");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};

await add(completed, "done");
await add(failed, "fail");
await until(async () => {
  const counts = await queue.getJobCounts("wait", "active");
  return counts.wait === 0 && counts.active === 0;
});
await add(active, "hold");
await until(async () => started === active);
await worker.pause(true); // takes nothing more: the waiting jobs stay waiting
await add(waiting, "wait");
const counts = await queue.getJobCounts("wait", "active", "completed", "failed");
const events = await connection.xlen(`bull:${name}:events`);
process.stdout.write(`REPORT ${JSON.stringify({ ...counts, events })}\n`);
for await (const _ of createInterface({ input: process.stdin })) {
  // nothing to read: stdin closing is the signal
}
release();
// a paused worker's close waits for a resume that never comes: force it
await worker.close(true);
await queue.close();
await connection.quit();
process.exit(0);
