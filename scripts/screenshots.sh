#!/usr/bin/env bash
# Screenshots of the operator pages in headless Chromium: starts a devnet (`wwt devnet up`),
# loads 2,000 rows through `wwt sql`, deletes some and compacts, then saves the tracker's
# dashboard and a provider's page as PNGs.
#
#   scripts/screenshots.sh [OUT_DIR]        (default: target/screenshots)
#
# Needs Debian's `chromium` package; builds `wwt` (release) if it is not up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/screenshots}
command -v chromium >/dev/null || {
    echo "screenshots need Chromium: apt-get install chromium" >&2
    exit 2
}
cargo build --release --locked -q -p wwt-cli
target=${CARGO_TARGET_DIR:-target}
wwt=$(cd "$target" && pwd)/release/wwt
mkdir -p "$out"
home=$(mktemp -d)
devnet=
cleanup() {
    status=$?
    [ -n "$devnet" ] && kill "$devnet" 2>/dev/null && wait "$devnet" || true
    if [ "$status" -ne 0 ] && [ -s "$home/up.txt" ]; then
        echo "wwt devnet up printed:" >&2
        cat "$home/up.txt" >&2
    fi
    rm -rf "$home"
}
trap cleanup EXIT
export WWT_HOME=$home
"$wwt" init >/dev/null
"$wwt" devnet up >"$home/up.txt" 2>&1 &
devnet=$!
for _ in $(seq 300); do
    grep -q "devnet up:" "$home/up.txt" && break
    kill -0 "$devnet" 2>/dev/null || exit 1
    sleep 0.1
done
# Each node's line is followed by its HTTP endpoint's.
http_of() { awk -v node="$1" '$1 == node { getline; print $1; exit }' "$home/up.txt"; }
tracker=$(http_of tracker-0)
provider=$(http_of provider-0)

{
    echo "CREATE TABLE docs (id BIGINT PRIMARY KEY, title TEXT, body TEXT);"
    echo "CREATE INDEX ON docs USING fulltext (body);"
    for batch in $(seq 0 9); do
        printf "INSERT INTO docs VALUES "
        seq $((batch * 200)) $((batch * 200 + 199)) |
            awk '{ printf "%s(%d, '\''doc %d'\'', '\''%s body of document %d'\'')", (NR > 1 ? ", " : ""), $1, $1, ($1 % 3 ? "plain" : "special"), $1 }'
        echo ";"
    done
    echo "DELETE FROM docs WHERE id % 2 = 0;"
} >"$home/load.sql"
"$wwt" sql -f "$home/load.sql" >/dev/null
"$wwt" compact docs >/dev/null

shoot() {
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1500,1200 --screenshot="$out/$1.png" "$2" 2>/dev/null
    [ -s "$out/$1.png" ] || { echo "Chromium saved no screenshot of $2" >&2; exit 1; }
    echo "$out/$1.png: $2"
}
shoot tracker "$tracker/"
shoot provider "$provider/"
