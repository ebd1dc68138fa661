import sys
from pathlib import Path

# the recovery tests reuse the bus tests' helpers (router, provider, req, usage_records)
sys.path.insert(0, str(Path(__file__).parent))
