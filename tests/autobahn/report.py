"""Summarises Autobahn|TestSuite results for tests/autobahn/run.sh.

    report.py RUN [RUN ...]

Each RUN is LABEL=OUTDIR:AGENT[:subject[:BASELINE_LABEL]]. OUTDIR holds the suite's index.json
and per-case reports. For every run this prints counts of `behavior` and `behaviorClose`; for
subject runs it also lists every FAILED case (description, expectation, what Autobahn saw; a
permessage-deflate case, 12.* or 13.*, that came out UNIMPLEMENTED counts as FAILED: wsnorm must
negotiate compression) and
the cases whose outcome (behaviour, or the peer's close code) differs from the baseline run. The last line is `N passed, M failed`,
counted over the subject runs' cases; the exit status is 1 if any of them FAILED.

Runs on Python 2.7 (the suite's interpreter) and Python 3.
"""
from __future__ import print_function

import json
import os
import sys

try:
    TEXT_TYPES = (str, unicode)  # noqa: F821 (Python 2)
except NameError:
    TEXT_TYPES = (str,)

BEHAVIOURS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "WRONG CODE", "FAILED"]


def case_key(case_id):
    out = []
    for part in case_id.split("."):
        try:
            out.append((0, int(part), ""))
        except ValueError:
            out.append((1, 0, part))
    return out


def failed(result):
    return result.get("behavior") == "FAILED" or result.get("behaviorClose") == "FAILED"


def not_negotiated(case_id, result):
    """A permessage-deflate case in which compression was not negotiated."""
    return case_id.startswith(("12.", "13.")) and result.get("behavior") == "UNIMPLEMENTED"


def shorten(value, limit=300):
    text = value if isinstance(value, TEXT_TYPES) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Run(object):
    def __init__(self, spec):
        label, rest = spec.split("=", 1)
        parts = rest.split(":")
        self.label = label
        self.outdir = parts[0]
        self.agent = parts[1]
        self.subject = len(parts) > 2 and parts[2] == "subject"
        self.baseline = parts[3] if len(parts) > 3 else None
        index_path = os.path.join(self.outdir, "index.json")
        if not os.path.exists(index_path):
            raise SystemExit("%s: no %s: the suite did not write its report" % (label, index_path))
        with open(index_path) as f:
            index = json.load(f)
        if self.agent not in index:
            raise SystemExit(
                "%s: agent %r not in %s (agents: %s)"
                % (label, self.agent, index_path, ", ".join(sorted(index)) or "none")
            )
        self.results = index[self.agent]
        self.cases = sorted(self.results, key=case_key)

    def detail(self, case_id):
        name = self.results[case_id].get("reportfile")
        if not name:
            return {}
        path = os.path.join(self.outdir, name)
        try:
            with open(path) as f:
                return json.load(f)
        except (IOError, ValueError):
            return {}


def counts(run, field):
    tally = {}
    for case_id in run.cases:
        value = run.results[case_id].get(field, "?")
        tally[value] = tally.get(value, 0) + 1
    order = [b for b in BEHAVIOURS if b in tally] + sorted(b for b in tally if b not in BEHAVIOURS)
    return ", ".join("%s %d" % (b, tally[b]) for b in order)


def print_failure(run, case_id):
    r = run.results[case_id]
    d = run.detail(case_id)
    print(
        "  FAILED %s (behavior %s, behaviorClose %s, remoteCloseCode %s, %s ms)"
        % (case_id, r.get("behavior"), r.get("behaviorClose"), r.get("remoteCloseCode"), r.get("duration"))
    )
    for key in ("description", "expectation", "result", "resultClose"):
        if d.get(key):
            print("      %-12s %s" % (key + ":", shorten(d[key])))
    if d:
        print(
            "      %-12s droppedByMe=%s failedByMe=%s wasClean=%s wasNotCleanReason=%s "
            "localCloseCode=%s remoteCloseCode=%s remoteCloseReason=%s"
            % (
                "close:",
                d.get("droppedByMe"),
                d.get("failedByMe"),
                d.get("wasClean"),
                shorten(d.get("wasNotCleanReason") or "-", 120),
                d.get("localCloseCode"),
                d.get("remoteCloseCode"),
                shorten(d.get("remoteCloseReason") or "-", 80),
            )
        )
        if d.get("received") is not None:
            print("      %-12s %s" % ("received:", shorten(d.get("received"), 200)))
        if d.get("expected") is not None:
            print("      %-12s %s" % ("expected:", shorten(d.get("expected"), 200)))
    print("      %-12s %s" % ("report:", os.path.join(run.outdir, r.get("reportfile", "?"))))


def compare(base, run):
    """Prints the cases whose behaviour differs from the baseline run, then those where only the
    close code the peer sent differs (grouped)."""
    behaviour_diffs = []
    code_diffs = {}
    for case_id in sorted(set(run.cases) | set(base.cases), key=case_key):
        a = base.results.get(case_id, {})
        b = run.results.get(case_id, {})
        pair_a = (a.get("behavior", "absent"), a.get("behaviorClose", "absent"))
        pair_b = (b.get("behavior", "absent"), b.get("behaviorClose", "absent"))
        code_a, code_b = a.get("remoteCloseCode"), b.get("remoteCloseCode")
        if pair_a != pair_b:
            behaviour_diffs.append((case_id, pair_a, code_a, pair_b, code_b))
        elif code_a != code_b:
            code_diffs.setdefault((code_a, code_b), []).append(case_id)
    if not behaviour_diffs and not code_diffs:
        print("  same outcome as %s in every case" % base.label)
        return
    if behaviour_diffs:
        print("  %d case(s) where the behaviour differs from %s (behavior/behaviorClose/remoteCloseCode):"
              % (len(behaviour_diffs), base.label))
        for case_id, pa, ca, pb, cb in behaviour_diffs:
            desc = run.detail(case_id).get("description", "") or base.detail(case_id).get("description", "")
            print("    %-8s %s/%s/%s -> %s/%s/%s  %s" % (case_id, pa[0], pa[1], ca, pb[0], pb[1], cb, shorten(desc, 100)))
    else:
        print("  the same behaviour as %s in every case" % base.label)
    for (ca, cb), ids in sorted(code_diffs.items(), key=lambda kv: -len(kv[1])):
        print("  %d case(s) with the same behaviour, remoteCloseCode %s -> %s: %s"
              % (len(ids), ca, cb, shorten(" ".join(ids), 400)))


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    runs = [Run(spec) for spec in argv[1:]]
    by_label = dict((run.label, run) for run in runs)
    passed = failures = 0
    for run in runs:
        print("== %s (agent %s, %d cases, %s)" % (run.label, run.agent, len(run.cases), run.outdir))
        print("  behavior:      %s" % counts(run, "behavior"))
        print("  behaviorClose: %s" % counts(run, "behaviorClose"))
        bad = [c for c in run.cases if failed(run.results[c])
               or (run.subject and not_negotiated(c, run.results[c]))]
        if bad:
            print("  %d FAILED case(s):" % len(bad))
            for case_id in bad:
                print_failure(run, case_id)
        else:
            print("  no FAILED cases")
        base = by_label.get(run.baseline) if run.baseline else None
        if base is not None:
            compare(base, run)
        if run.subject:
            failures += len(bad)
            passed += len(run.cases) - len(bad)
    print("%d passed, %d failed" % (passed, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
