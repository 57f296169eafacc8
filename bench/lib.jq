# Shared by the bench scripts' summaries: jq -L bench 'include "lib"; ...'. The input is an
# array of the load tool's reports, each labelled "TARGET WHAT round N" (WHAT: k=1, k=16, paced).

def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor]
  else (.[length/2 - 1] + .[length/2]) / 2 end;
def summary: { runs: length,
    msg_per_s: (map(.msg_per_s) | median),
    p50_us: (map(.p50_us) | median),
    p99_us: (map(.p99_us) | median),
    max_us: (map(.max_us) | median),
    cpu_us_per_msg: (map(.proxy_cpu_us_per_msg) | median),
    sched_us_per_msg: (map(.proxy_sched_us_per_msg) | median),
    cpu_us_per_msg_all: map(.proxy_cpu_us_per_msg) };
# $t's runs at $w (e.g. "k=1" or "paced"), summarised.
def target($t; $w): map(select(.label | startswith("\($t) \($w) round "))) | summary;
def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
# $t/$ref in CPU per message within each round (they ran close together), then the median over
# rounds.
def paired($t; $ref; $w): . as $runs | [.[] | select(.label | startswith("\($t) \($w) round ")) |
    (.label | ltrimstr("\($t) \($w) round ")) as $r | .proxy_cpu_us_per_msg as $a |
    ($runs | map(select(.label == "\($ref) \($w) round \($r)"))[0].proxy_cpu_us_per_msg) as $b |
    select($a != null and $b != null and $b > 0) | $a / $b] | median;
# The least disturbed round of each: this VM reports no steal time, so time the hypervisor
# takes from CPU 0 is counted as the running proxy and only ever adds.
def best($t; $ref; $w): ratio(target($t; $w).cpu_us_per_msg_all | min;
    target($ref; $w).cpu_us_per_msg_all | min);
# $t/$ref, medians over the rounds: CPU per message and p99.
def cpu($t; $ref; $w): ratio(target($t; $w).cpu_us_per_msg; target($ref; $w).cpu_us_per_msg);
def p99($t; $ref; $w): ratio(target($t; $w).p99_us; target($ref; $w).p99_us);

# For the tables: $x rounded to $d decimals ("-" for none), and a goal's verdict.
def f($x; $d): if $x == null then "-" else ($x * pow(10; $d) | round) / pow(10; $d) | tostring end;
def verdict($x; $goal): if $x == null then "-" elif $x <= $goal then "met" else "NOT met" end;
# One row of the ping-pong table: | K | target | round trips/s | p50 | p99 | CPU per round trip |
def pingpong_row($k; $t): .pingpong[$k][$t] as $r |
  "| \($k) | \($t) | \(f($r.msg_per_s; 0)) | \(f($r.p50_us; 0)) | \(f($r.p99_us; 0)) | \(f($r.cpu_us_per_msg; 2)) |";
# The ping-pong table of a summary: per K, a row for each of $targets.
def pingpong_table($targets): . as $all |
  "| load | target | round trips/s | p50 us | p99 us | proxy CPU us/round trip |",
  "|---|---|---:|---:|---:|---:|",
  (("k1", "k16") as $k | $targets[] as $t | $all | pingpong_row($k; $t));
# The ping-pong section of a result file: per K, each of $targets summarised.
def pingpong_summary($targets): . as $runs | [1, 16] | map(. as $k | { key: "k\($k)", value:
    ($targets | map(. as $t | { key: $t, value: ($runs | target($t; "k=\($k)")) }) | from_entries) })
  | from_entries;
# The first line of a summary.
def machine_line: "machine: \(.machine.nproc) CPUs, \(.machine.cpu), kernel \(.machine.kernel); nginx \(.nginx_version), HAProxy \(.haproxy_version); \(.rounds) round(s), medians; \(.processes) processes";
# $t against $ref in ping-pong at both K: CPU per message (medians, per round, best rounds) and
# p99.
def pingpong_versus($t; $ref): {
  cpu_per_msg_k1: cpu($t; $ref; "k=1"),
  cpu_per_msg_k1_paired: paired($t; $ref; "k=1"),
  cpu_per_msg_k1_best: best($t; $ref; "k=1"),
  cpu_per_msg_k16: cpu($t; $ref; "k=16"),
  cpu_per_msg_k16_paired: paired($t; $ref; "k=16"),
  cpu_per_msg_k16_best: best($t; $ref; "k=16"),
  p99_k1: p99($t; $ref; "k=1"),
  p99_k16: p99($t; $ref; "k=16") };
# The head of a goals table, its first column named $title.
def goals_head($title): "| \($title) | wsnorm/nginx | wsnorm/HAProxy | goal | verdict |",
  "|---|---:|---:|---|---|";
# A goal row of CPU per round trip at $k ("k1", "k16"): wsnorm against nginx (the goal: at most
# $goal times) and HAProxy, from .wsnorm_vs.
def cpu_row($title; $k; $goal): .wsnorm_vs as $v |
  "| \($title) | \(f($v.nginx["cpu_per_msg_\($k)"]; 2)) (per round: \(f($v.nginx["cpu_per_msg_\($k)_paired"]; 2)); best rounds: \(f($v.nginx["cpu_per_msg_\($k)_best"]; 2))) | \(f($v.haproxy["cpu_per_msg_\($k)"]; 2)) (per round: \(f($v.haproxy["cpu_per_msg_\($k)_paired"]; 2))) | <= \($goal)x nginx | \(verdict($v.nginx["cpu_per_msg_\($k)"]; $goal)) |";
