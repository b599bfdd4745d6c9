"""PgBouncer's admin console on 127.0.0.1, as the agents in a pooler pod use
it: RELOAD, RECONNECT and the SHOW tables. The console speaks the simple
query protocol only, so commands go through libpq's ``PQexec``. Used by
:mod:`headroom.agent.readpool` and :mod:`headroom.agent.pooler`; a failure
is a :class:`ConsoleError` whose text never carries the password.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConsoleError(Exception):
    """The console could not be reached, or refused the command."""


@dataclass(frozen=True)
class Console:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    connect_timeout_seconds: int = 3

    def run(self, command: str) -> list[dict[str, str]]:
        """``command`` on the console; the rows it returned (none for RELOAD)."""
        import psycopg  # noqa: PLC0415 - the init steps and the unit tests never connect

        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                dbname="pgbouncer",
                user=self.user,
                password=self.password,
                sslmode="disable",  # localhost, inside the pod
                connect_timeout=self.connect_timeout_seconds,
                autocommit=True,
            ) as conn:
                result = conn.pgconn.exec_(command.encode())
                status = result.status
                if status not in (
                    psycopg.pq.ExecStatus.COMMAND_OK,
                    psycopg.pq.ExecStatus.TUPLES_OK,
                ):
                    message = (result.error_message or b"").decode(errors="replace").strip()
                    raise ConsoleError(f"{command} refused: {message or f'status {status}'}")
                columns = [(result.fname(i) or b"").decode() for i in range(result.nfields)]
                return [
                    {
                        name: (result.get_value(row, i) or b"").decode(errors="replace")
                        for i, name in enumerate(columns)
                    }
                    for row in range(result.ntuples)
                ]
        except psycopg.Error as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
            scrubbed = f"{type(err).__name__}: {text}"
            if self.password:
                scrubbed = scrubbed.replace(self.password, "***")
            raise ConsoleError(scrubbed[:300]) from None

    def reload(self) -> str | None:
        """RELOAD; None when done, else why not."""
        try:
            self.run("RELOAD")
        except ConsoleError as err:
            return str(err)
        return None
