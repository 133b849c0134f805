"""Builds a Python operator or window function into a weir component.

    python -m weir.build app.py -o app.wasm [--world co-operator|aggregate-function|reduce-function|process-window-function]

The world is detected from what the app exports (``Handler``, ``Aggregate``, ``Reduce``,
``ProcessWindow``) when not given. Runs componentize-py against weir's WIT (found next to
this SDK in the weir repository, or given with ``--wit``).
"""

import argparse
import os
import re
import subprocess
import sys

WORLDS = {
    "Handler": "co-operator",
    "Aggregate": "aggregate-function",
    "Reduce": "reduce-function",
    "ProcessWindow": "process-window-function",
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="weir-build-python", description=__doc__.splitlines()[0])
    parser.add_argument("app", help="the app module (a .py file)")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--world")
    parser.add_argument("--wit", help="the WIT directory (default: weir's wit/v0.3 for operators, wit/ for window functions)")
    parser.add_argument("--componentize-py", default=os.environ.get("COMPONENTIZE_PY", "componentize-py"))
    args = parser.parse_args(argv)
    app = os.path.abspath(args.app)
    source = open(app).read()
    world = args.world
    if world is None:
        found = [w for name, w in WORLDS.items() if re.search(rf"^{name}\s*=", source, re.M)]
        if len(found) != 1:
            sys.exit(f"{args.app}: export exactly one of Handler = export(...), Aggregate = export_aggregate(...), "
                     "Reduce = export_reduce(...), ProcessWindow = export_process_window(...) (or pass --world)")
        world = found[0]
    sdk = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    # Operators are built for contract 0.3 (wit/v0.3); window functions are in the 0.2 package (wit/).
    wit = args.wit or os.path.join(os.path.dirname(__file__), "..", "..", "..", "wit", "v0.3" if world == "co-operator" else "")
    module = os.path.splitext(os.path.basename(app))[0]
    command = [args.componentize_py, "-d", os.path.abspath(wit), "-w", world, "componentize",
               "-p", os.path.dirname(app), "-p", sdk, module, "-o", os.path.abspath(args.output)]
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
