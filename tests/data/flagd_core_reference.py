"""Regenerates flagd_core_v3_reference.json: resolutions of the testbed's testkit-flags.json by
the flagd reference evaluator (fractional v3), for a seeded sample of contexts per flag.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install openfeature-flagd-core==2.0.0
    /tmp/ref/bin/python tests/data/flagd_core_reference.py > tests/data/flagd_core_v3_reference.json
"""
import json
import logging
import random
import sys

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

logging.disable(logging.CRITICAL)
DOC = "tests/conformance/flagd-testbed/evaluator/flags/testkit-flags.json"
CODE_DEFAULT = "__code_default__"

doc = json.load(open(DOC))
core = FlagdCore()
core.set_flags(json.loads(json.dumps(doc)))
random.seed(7)
tks = [None, "jon@company.com", "jane@company.com", "user1", "some-targeting-key",
       "5c3d8535-f81a-4478-a6d3-afaa4d51199e", "ejOoVL", "6LvT0", "any-user"]
emails = [None, "ballmer@macrosoft.com", "jobs@orange.com", "x@y.z"]
versions = [None, "2.0.0", "2.1.0", "1.9.0", "3.0.1", "v1.0.0", "1", "1.2", 2, 1.2, "1.0.0+other", "not-a-version"]
names = [None, "jack", "queen", "ten", "nine", "seven", "eight", "two", "3"]
extras = [{}, {"tier": "premium"}, {"tier": "basic"}, {"color": "red"}, {"color": "yellow"},
          {"id": "abcdef"}, {"id": "uvwxyz"}, {"num": 123}]
cases = []
for key in doc["flags"]:
    seen = set()
    for _ in range(12):
        attrs = {}
        tk = random.choice(tks)
        e = random.choice(emails)
        if e:
            attrs["email"] = e
        v = random.choice(versions)
        if v is not None:
            attrs["version"] = v
        n = random.choice(names)
        if n:
            attrs["user"] = {"name": n}
        attrs.update(random.choice(extras))
        ctx = dict(attrs)
        if tk is not None:
            ctx["targetingKey"] = tk
        sig = json.dumps(ctx, sort_keys=True)
        if sig in seen:
            continue
        seen.add(sig)
        try:
            r = core._resolve(key, CODE_DEFAULT, EvaluationContext(targeting_key=tk, attributes=attrs), None)
            code_default = r.variant is None and r.value == CODE_DEFAULT
            out = {"value": None if code_default else r.value, "variant": r.variant,
                   "reason": str(r.reason.value), "errorCode": None}
        except OpenFeatureError as ex:
            out = {"value": None, "variant": None, "reason": "ERROR", "errorCode": str(ex.error_code.value)}
        cases.append({"flag": key, "context": ctx, "expected": out})

note = ("expected resolutions of testkit-flags.json in fractional v3 mode, computed with PyPI "
        "openfeature-flagd-core 2.0.0 (FlagdCore._resolve without a type check; value null = code "
        "default). Regenerate with tests/data/flagd_core_reference.py.")
sys.stdout.write('{"note": %s,\n "cases": [\n' % json.dumps(note))
sys.stdout.write(",\n".join("  " + json.dumps(c, sort_keys=True) for c in cases))
sys.stdout.write("\n ]}\n")
