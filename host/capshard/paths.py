"""Where the repository's parts live, found relative to this package."""

import os

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIRMWARE_DIR = os.path.join(REPO_ROOT, "firmware")
BOARD_CONFIGS_DIR = os.path.join(REPO_ROOT, "board_configs")
SHARED_DIR = os.path.abspath(os.path.join(REPO_ROOT, "..", "shared"))
