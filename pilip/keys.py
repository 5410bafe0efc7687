"""Every Parquet column and batch key, defined once: ``NAME = "name"  # shape | unit``.

Parquet tables (one row per configuration):
  configurations  ID .. PARENT_ID
  labels          CONFIG_ID, STATUS, ENERGY, COMPONENTS, ERROR, WALL_TIME, ... (see
  pilip.reference.labels)
  dataset         the configuration columns + ENERGY (+ FORCES where known) + REFERENCE + SPLIT

Batches (``dict[str, torch.Tensor]``; atoms of all structures concatenated):
  NUMBERS, POSITIONS, BATCH, N_ATOMS, ENERGY, FORCES, EDGE_INDEX, EDGE_SHIFT, CELL
"""

# --- configuration table columns -------------------------------------------------------------
ID = "id"  # ()                          | content hash, hex string
NUMBERS = "numbers"  # (n_atoms,)         | atomic numbers, int
POSITIONS = "positions"  # (n_atoms, 3)   | Angstrom, float64 on disk
CHARGE = "charge"  # ()                   | elementary charges, int
MULTIPLICITY = "multiplicity"  # ()       | 2S+1, int
SYSTEM = "system"  # ()                   | name of the seed system, safe identifier
GENERATOR = "generator"  # ()             | how it was made: seed, rattle, normal_modes, md, import
GENERATOR_PARAMS = "generator_params"  # ()  | JSON object of the generator's parameters
SEED = "seed"  # ()                       | random seed of the generator, int
PARENT_ID = "parent_id"  # ()             | id of the configuration it was derived from, or null
CELL = "cell"  # (3, 3)                   | Angstrom, null for molecules
PBC = "pbc"  # (3,)                       | periodic directions, null for molecules

# --- labels and dataset columns --------------------------------------------------------------
CONFIG_ID = "config_id"  # ()             | id of the labelled configuration
REFERENCE = "reference"  # ()             | name of the reference method
STATUS = "status"  # ()                   | ok | failed | timeout
ENERGY = "energy"  # ()                   | eV, total energy (per structure)
FORCES = "forces"  # (n_atoms, 3)         | eV/A, null where not computed
# a committee's spread over its members (ASE calculator results; population std, ddof 0)
ENERGY_STD = "energy_std"  # ()           | eV, float
FORCES_STD = "forces_std"  # (n_atoms, 3) | eV/A, per component
ERROR = "error"  # ()                     | error text of a failed calculation, else null
WALL_TIME = "wall_time"  # ()             | seconds
SPLIT = "split"  # ()                     | train | val | test
FORCE_VALIDATION = "force_validation"  # () | bool: forces for evaluation only, never training
COMPONENTS = "components"  # map<name, E> | Hartree (field metadata), e.g. "mp2_corl/cc-pvtz"
ATTEMPTS = "attempts"  # ()               | calculations tried for this row (2 after a retry)
PROGRAM = "program"  # ()                 | program that computed the label, e.g. psi4
PROGRAM_VERSION = "program_version"  # () | its version string
METHOD = "method"  # ()                   | method/basis/recipe string as run
OPTIONS = "options"  # ()                 | JSON object of the program options used
THREADS = "threads"  # ()                 | threads of the calculation, int
HOST = "host"  # ()                       | host name the calculation ran on
DATE = "date"  # ()                       | ISO-8601 UTC time the row was finished

# --- batch keys (torch) ----------------------------------------------------------------------
BATCH = "batch"  # (n_atoms,)             | index of the structure each atom belongs to, long
N_ATOMS = "n_atoms"  # (n_structures,)    | atoms per structure, long
EDGE_INDEX = "edge_index"  # (2, n_edges) | [receiver, sender] atom indices, long
EDGE_SHIFT = "edge_shift"  # (n_edges, 3) | Angstrom, periodic image shift added to the sender
ENERGY_WEIGHT = "energy_weight"  # (n_structures,) | 1 where an energy label exists, else 0
FORCE_WEIGHT = "force_weight"  # (n_structures,) | 1 where force labels may be trained on, else 0
STRUCTURE_WEIGHT = "structure_weight"  # (n_structures,) | 1 for a real structure, 0 for padding

SPLITS = ("train", "val", "test")
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_TIMEOUT = "timeout"

# --- file metadata keys ----------------------------------------------------------------------
META_SCHEMA_VERSION = b"pilip.schema_version"
META_KIND = b"pilip.kind"  # configurations | labels | dataset
META_PROVENANCE = b"pilip.provenance"  # JSON: pilip version, config hash, command, date
META_UNIT = b"unit"  # field-level metadata key
SCHEMA_VERSION = "1"
