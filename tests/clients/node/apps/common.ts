// What every test app shares: its command line (its name and jobs, never
// configuration: that comes from the binding alone), the start signal and its
// one-line report.
import { createInterface } from "node:readline";

export type Report = {
  pod: string;
  queries: number;
  errors: number;
  firstErrors: string[];
  jobs?: number;
  processed?: number;
  encrypted?: number;
};

// Prisma's interactive transactions give up after 2 s waiting for a connection and
// 5 s in all; on a shared 2-core test machine at its ceiling that is a timeout of
// the test box, not a refusal, so the apps allow what a loaded production would.
export const TX_LIMITS = { maxWait: 30_000, timeout: 60_000 };

export function args(): { pod: string; jobs: number } {
  const get = (flag: string, fallback: string) => {
    const at = process.argv.indexOf(flag);
    return at >= 0 ? process.argv[at + 1] : fallback;
  };
  return { pod: get("--pod", "pod"), jobs: Number(get("--jobs", "0")) };
}

// The test starts every pod's load at once, however long each took to start: a
// pod set up says READY and waits for "GO <until> <drain until>" on stdin (epoch
// ms: the end of the load, and how long a worker may go on with what is queued).
export async function ready(): Promise<{ until: number; drainUntil: number }> {
  process.stdout.write("READY\n");
  for await (const line of createInterface({ input: process.stdin })) {
    const [word, until, drainUntil] = line.split(" ");
    if (word === "GO") return { until: Number(until), drainUntil: Number(drainUntil) };
  }
  throw new Error("stdin closed before GO");
}

// A worker's timeline: the load, then until its queue has nothing waiting or
// running (every job enqueued is processed, however slow the test box is).
export async function workUntilDrained(queue: {
  getJobCounts(...types: string[]): Promise<Record<string, number>>;
}): Promise<void> {
  const { until, drainUntil } = await ready();
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  await sleep(Math.max(0, until - Date.now()));
  while (Date.now() < drainUntil) {
    const counts = await queue.getJobCounts("wait", "active", "delayed", "prioritized");
    if (Object.values(counts).every((n) => n === 0)) return;
    await sleep(200);
  }
}

export function need(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not in the environment`);
  return value;
}

export function counter(pod: string): Report & { fail: (err: unknown) => void } {
  const report: Report = { pod, queries: 0, errors: 0, firstErrors: [] };
  return Object.assign(report, {
    fail(err: unknown) {
      report.errors += 1;
      if (report.firstErrors.length < 5) report.firstErrors.push(String((err as Error)?.message ?? err));
    },
  });
}

// Every one of `size` loops runs `work` until `until`: the pod's whole pool busy.
export async function atCeiling(size: number, until: number, work: () => Promise<void>, onError: (e: unknown) => void) {
  await Promise.all(
    Array.from({ length: size }, async () => {
      while (Date.now() < until) {
        try {
          await work();
        } catch (err) {
          onError(err);
        }
      }
    }),
  );
}

export function done(report: Report): void {
  const { pod, queries, errors, firstErrors, jobs, processed, encrypted } = report;
  const fields = { pod, queries, errors, firstErrors, jobs, processed, encrypted };
  process.stdout.write(`REPORT ${JSON.stringify(fields)}\n`);
}

// A BullMQ worker's outcome into the report: completed jobs, failures, errors.
export function track(
  worker: { on(event: string, listener: (...args: any[]) => void): unknown },
  report: Report & { fail: (err: unknown) => void },
): void {
  report.processed = 0;
  worker.on("completed", () => {
    report.processed = (report.processed ?? 0) + 1;
  });
  worker.on("failed", (_job: unknown, err: unknown) => report.fail(err));
  worker.on("error", (err: unknown) => report.fail(err));
}
