import os
import sys

# tests/ holds shared helpers (graphs.py); make them importable from subfolders too
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
