#!/bin/sh
# The demo's TODO list (the seed's wallnerryan/todolist idea): its items live in the database the
# environment names — DATABASE (redis), DATABASE_IP, DATABASE_PORT — so a second copy pointed at a
# snapshot's database shows the items as they were when the snapshot was taken.
DB_HOST=${DATABASE_IP:-localhost}
DB_PORT=${DATABASE_PORT:-6379}
r() { redis-cli -h "$DB_HOST" -p "$DB_PORT" --raw "$@"; }

if [ "$REQUEST_METHOD" = "POST" ]; then
  body=$(head -c "${CONTENT_LENGTH:-0}")
  raw=$(echo "$body" | sed -n 's/^.*item=\([^&]*\).*$/\1/p' | tr '+' ' ')
  item=$(httpd -d "$raw")
  if [ -z "$item" ]; then
    printf 'Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nno item given: POST item=...\n'
    exit 0
  fi
  if ! r RPUSH todos "$item" >/dev/null 2>&1; then
    printf 'Status: 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n'
    echo "database $DATABASE at $DB_HOST:$DB_PORT unreachable"
    exit 0
  fi
  printf 'Status: 303 See Other\r\nLocation: /cgi-bin/todo\r\n\r\n'
  exit 0
fi

if ! items=$(r LRANGE todos 0 -1 2>&1) || [ "${items#Could not connect}" != "$items" ]; then
  printf 'Status: 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\n'
  echo "database ${DATABASE:-redis} at $DB_HOST:$DB_PORT unreachable"
  exit 0
fi
case "$QUERY_STRING" in
  *format=text*)
    printf 'Content-Type: text/plain\r\n\r\n'
    [ -n "$items" ] && echo "$items"
    exit 0 ;;
esac
printf 'Content-Type: text/html\r\n\r\n'
echo "<!doctype html><html><head><title>TODO list</title></head><body>"
echo "<h1>TODO list</h1><p>database: ${DATABASE:-redis} at $DB_HOST:$DB_PORT, served by $(hostname)</p><ul>"
echo "$items" | while IFS= read -r line; do
  [ -n "$line" ] && echo "<li>$(echo "$line" | sed 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g')</li>"
done
echo '</ul><form method="post"><input name="item" placeholder="something to do"><button>Add</button></form>'
echo "</body></html>"
