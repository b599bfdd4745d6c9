// A migration tool on node-postgres (drizzle-kit, node-pg-migrate): pg.Pool
// straight to the primary on the binding's direct DATABASE_URL, whose sslmode
// and sslrootcert (the CA's file in the pod) pg reads; its whole pool at once,
// each connection asking the server whether it is encrypted.
import pg from "pg";
import { args, counter, done, need } from "./common.ts";

const report = counter(args().pod);
const size = Number(need("DATABASE_POOL_SIZE"));
const pool = new pg.Pool({ connectionString: need("DATABASE_URL"), max: size });
report.encrypted = 0;
await Promise.all(
  Array.from({ length: size }, async () => {
    try {
      const client = await pool.connect();
      try {
        const { rows } = await client.query(
          "SELECT ssl FROM pg_stat_ssl, pg_sleep(0.2) WHERE pid = pg_backend_pid()",
        );
        report.queries += 1;
        if (rows[0]?.ssl === true) report.encrypted = (report.encrypted ?? 0) + 1;
      } finally {
        client.release();
      }
    } catch (err) {
      report.fail(err);
    }
  }),
);
await pool.end();
done(report);
