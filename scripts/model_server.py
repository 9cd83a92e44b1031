"""Run the Trax model server by hand: python scripts/model_server.py --workdir . [--settings JSON].

Normally you never need this: rule jobs start the server on demand (see trax.runtime.client).
"""

from trax.runtime.server import main

if __name__ == "__main__":
    main()
