# Names and helpers shared by the rules. Keep logic in the pilip package.
import json

SYSTEMS = sorted(config["systems"])
