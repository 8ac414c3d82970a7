import os
import sys

# targets.py / mutate.py / proxy.py are imported by plain name, from here and from tools/fuzz.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
