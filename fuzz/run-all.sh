#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, one
# after the other, under `nice`, with the memory and time limits below;
# prints one summary line per target and exits non-zero if any target
# found something (crash, panic, hang, allocation over the limit).
#
#   fuzz/run-all.sh SECONDS [TARGET...]
#
# Needs `cargo +nightly` and cargo-fuzz (see fuzz/README.md). The committed
# corpus fuzz/corpus/<t>/ is read, never written: new inputs go to the
# working corpus fuzz/work/corpus/<t>/ (kept between runs, git-ignored),
# logs to fuzz/work/logs/<t>.log, findings to fuzz/artifacts/<t>/.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: fuzz/run-all.sh SECONDS [TARGET...]}
shift
# Limits (see README.md for the reasoning):
# - inputs of at most 4 KiB: every limit the targets pick is reachable
#   well within that (the head and session targets choose small limits
#   from their first byte);
# - one allocation over 32 MiB is a finding: nothing legitimate comes
#   close (a session buffer is at most 2 x 64 KiB, inputs are 4 KiB), so
#   only a length taken from the input and trusted can get there;
# - a resident set over 1 GiB is a finding: the targets peak at 420-550 MiB
#   here, nearly all AddressSanitizer's shadow and quarantine;
# - one input taking over 10 s is a hang (they take well under 1 ms).
limits=(-max_len=4096 -malloc_limit_mb=32 -rss_limit_mb=1024 -timeout=10)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets"; exit 1; }

mkdir -p fuzz/work/logs
echo "fuzz: building ${#targets[@]} targets"
nice -n 10 cargo +nightly fuzz build >fuzz/work/logs/build.log 2>&1 || {
  tail -n 40 fuzz/work/logs/build.log
  echo "fuzz: build failed"
  exit 1
}

failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/corpus/$t" "fuzz/corpus/$t"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  log="fuzz/work/logs/$t.log"
  # The first corpus directory receives new inputs; the second is read only.
  nice -n 10 cargo +nightly fuzz run "$t" "fuzz/work/corpus/$t" "fuzz/corpus/$t" -- \
    "${limits[@]}" "${dict[@]}" -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    failed=1
    why=$(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+( \([^)]*\))?|ERROR: AddressSanitizer: [a-z-]+' "$log" || true)
    # A panic: where, and its message (for assert_eq!, the two sides).
    panic=$(grep -m1 -A3 'panicked at' "$log" | sed 's/.*panicked at //' || true)
    if grep -q '^ *left: ' <<<"$panic"; then
      panic="$(head -n1 <<<"$panic") $(grep -E '^ *(left|right): ' <<<"$panic" | cut -c1-120 | tr '\n' ' ')"
    else
      panic=$(head -n2 <<<"$panic" | tr '\n' ' ' | cut -c1-200)
    fi
    why="${panic:-${why:-exit $rc}}"
    art=$(grep -m1 -o 'Test unit written to [^ ]*' "$log" | sed 's/Test unit written to //' || true)
    result="FAIL: $why ${art:+(input: $art)} (log: $log)"
  fi
  line=$(printf '%-16s %ss: %s runs, %s exec/s, cov %s, ft %s, corpus %s, peak rss %s MiB: %s' \
    "$t" "$secs" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$result")
  echo "$line"
  summary+=("$line")
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FINDINGS (reproduce: cargo +nightly fuzz run TARGET INPUT; see fuzz/README.md)"
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets clean"
