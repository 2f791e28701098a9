#!/usr/bin/env bash
# CI step: runs every fuzz target briefly (FUZZ_SECONDS, 20 s by default)
# so that a regression in a parser is caught. Needs the nightly toolchain;
# without one it says so and exits 0 (the committed corpus is still
# replayed on stable by `cargo test`, tests/fuzz_corpus.rs). Installs
# cargo-fuzz if it is missing, giving up (exit 0, with a note) after 15
# minutes or on failure.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-20}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped: no nightly toolchain (corpus replayed by tests/fuzz_corpus.rs instead)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  if ! timeout 900 nice -n 10 cargo install cargo-fuzz --locked >/tmp/cargo-fuzz-install.log 2>&1; then
    tail -n 20 /tmp/cargo-fuzz-install.log
    echo "fuzz: skipped: could not install cargo-fuzz (corpus replayed by tests/fuzz_corpus.rs instead)"
    exit 0
  fi
fi
start=$(date +%s)
bash fuzz/run-all.sh "$secs"
rc=$?
echo "fuzz: $(($(date +%s) - start)) s"
exit "$rc"
