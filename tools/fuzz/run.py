"""Long fuzzing of every decoder (`make fuzz`): the same targets and judges as
tests/reliability/test_fuzz_decoders.py, run for as long as asked.

Uses atheris (coverage-guided) when it is installed and --target names one
decoder; otherwise a seeded mutation loop over all decoders. Any undocumented
exception is saved to tests/reliability/corpus/<decoder>/ and counted; the
exit code is 1 if any was found. Last line:
`fuzz: seconds=S inputs=N crashers=C`.
"""

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "reliability"))

import mutate  # noqa: E402
import targets  # noqa: E402


def loop(names, seconds, seed):
    gens = mutate.generators()
    rng = random.Random(seed)
    counts = {n: 0 for n in names}
    crashers = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in names:
            s = rng.getrandbits(48)
            data = gens[name](random.Random(s))
            counts[name] += 1
            try:
                targets.run(name, data)
            except Exception as e:
                crashers += 1
                path = targets.save_crasher(name, data)
                print(f"CRASH {name} seed={s}: {type(e).__name__}: {e} -> {path}", flush=True)
    return counts, crashers


def with_atheris(name, seconds):
    import atheris

    def one(data):
        targets.run(name, data)  # anything undocumented propagates: atheris keeps the input

    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}",
                   f"-artifact_prefix={os.path.join(targets.CORPUS_DIR, name)}/"], one)
    os.makedirs(os.path.join(targets.CORPUS_DIR, name), exist_ok=True)
    atheris.Fuzz()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--target", choices=sorted(targets.TARGETS), help="one decoder (default: all)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if args.target:
        try:
            import atheris  # noqa: F401
        except ImportError:
            pass
        else:
            return with_atheris(args.target, args.seconds)
    names = [args.target] if args.target else sorted(targets.TARGETS)
    seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    counts, crashers = loop(names, args.seconds, seed)
    for n in names:
        print(f"{n}: {counts[n]} inputs")
    print(f"fuzz: seconds={args.seconds:g} seed={seed} inputs={sum(counts.values())} crashers={crashers}")
    return 1 if crashers else 0


if __name__ == "__main__":
    sys.exit(main())
