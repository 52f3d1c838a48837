#!/bin/sh
# The entrypoint of docker.io/kpaas/mariadb (Debian 12's MariaDB server):
# on the first start it initialises the data folder and sets the root
# password, then runs the server in the foreground. The environment is a
# subset of the official MariaDB image's:
#   MARIADB_ROOT_PASSWORD (or _FILE)  required on the first start; never defaulted
#   MARIADB_DATABASE                  created if set
#   MARIADB_USER, MARIADB_PASSWORD (or _FILE)
#                                     created if set, with every right on MARIADB_DATABASE
# The MYSQL_* names are accepted too.
set -eu

log() { printf '%s [entrypoint] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
fail() { log "error: $*" >&2; exit 1; }

# setting NAME: MARIADB_NAME, else MYSQL_NAME, else the file MARIADB_NAME_FILE names.
setting() {
	eval "v=\${MARIADB_$1:-\${MYSQL_$1:-}}"
	eval "f=\${MARIADB_$1_FILE:-\${MYSQL_$1_FILE:-}}"
	if [ -z "$v" ] && [ -n "$f" ]; then
		[ -r "$f" ] || fail "MARIADB_$1_FILE: cannot read $f"
		v=$(cat "$f")
	fi
	printf '%s' "$v"
}

# sql_string VALUE: VALUE as a quoted SQL string literal.
sql_string() {
	printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")"
}

# sql_name VALUE: VALUE as a quoted SQL identifier.
sql_name() {
	printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"
}

# sql LINE: one statement for the client (printf: dash's echo would
# interpret the backslashes of escaped strings).
sql() { printf '%s\n' "$1"; }

if [ "${1#-}" != "$1" ]; then
	set -- mariadbd "$@"
fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
	exec "$@"
fi

datadir=/var/lib/mysql
if [ ! -d "$datadir/mysql" ]; then
	root_password=$(setting ROOT_PASSWORD)
	[ -n "$root_password" ] || fail "the data folder $datadir is empty and MARIADB_ROOT_PASSWORD is not set: there is no default password"
	database=$(setting DATABASE)
	user=$(setting USER)
	password=$(setting PASSWORD)
	if [ -n "$user" ] && [ -z "$password" ]; then
		fail "MARIADB_USER is set but MARIADB_PASSWORD is not"
	fi

	log "initialising $datadir"
	mariadb-install-db --datadir="$datadir" --skip-test-db --auth-root-authentication-method=normal \
		--skip-name-resolve --force >/dev/null
	socket=/tmp/mysqld-init.sock
	"$@" --skip-networking --socket="$socket" &
	pid=$!
	i=0
	until mariadb --protocol=socket --socket="$socket" -uroot -e 'SELECT 1' >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -lt 120 ] || fail "the server did not start within 120 s"
		kill -0 "$pid" 2>/dev/null || fail "the server stopped while initialising"
		sleep 1
	done
	{
		sql "SET @@SESSION.SQL_LOG_BIN=0;"
		# Only root with its password is left (Debian's socket-authenticated
		# mysql@localhost and the host-named roots go), as in the official image.
		sql "DELETE FROM mysql.global_priv WHERE User NOT IN ('mariadb.sys', 'root') OR Host NOT IN ('localhost');"
		sql "DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost');"
		sql "ALTER USER 'root'@'localhost' IDENTIFIED BY $(sql_string "$root_password");"
		sql "CREATE USER 'root'@'%' IDENTIFIED BY $(sql_string "$root_password");"
		sql "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
		if [ -n "$database" ]; then
			sql "CREATE DATABASE IF NOT EXISTS $(sql_name "$database");"
		fi
		if [ -n "$user" ]; then
			sql "CREATE USER $(sql_string "$user")@'%' IDENTIFIED BY $(sql_string "$password");"
			if [ -n "$database" ]; then
				sql "GRANT ALL ON $(sql_name "$database").* TO $(sql_string "$user")@'%';"
			fi
		fi
		sql "FLUSH PRIVILEGES;"
		sql "SHUTDOWN;"
	} | mariadb --protocol=socket --socket="$socket" -uroot
	wait "$pid" || true
	log "initialised$( [ -n "$database" ] && printf ' (database %s)' "$database" )"
fi

exec "$@"
