"""What a trial leaves behind, as one typed vocabulary (docs/design.md §5, §7).

Every Optuna user attribute a trial or study carries, how a trial can end (and what that means to
Optuna and to MLflow), where a run's artifacts live, what a trial's LoggedModel holds, and the payloads
of the files ee-search writes there. Writers (the recorder) and readers (the fronts, the console, the model export) all go through
these names, so no attribute key or artifact path is spelled anywhere else.

Pure vocabulary: it knows neither Optuna nor MLflow (trials are duck-typed), so every layer from the
fit upwards can use it.
"""

from ee_search.records.artifacts import (
    BEST_CHECKPOINT,
    CHECKPOINTS,
    EXITS,
    FIGURES,
    LAST_CHECKPOINT,
    LAST_CHECKPOINT_ALT,
    LAST_CHECKPOINTS,
    PARETO,
    STUDY_CONFIG,
    TRADEOFF_CSV,
    TRADEOFF_FIGURE,
    TRIAL_CONFIG,
    VAL_LOGITS,
    BestCheckpointFile,
    CheckpointMetadata,
    ValLogitsFile,
    file_name,
    folder,
    load_best_checkpoint,
    load_val_logits,
    save_val_logits,
)
from ee_search.records.ending import FINISHED_STATE_NAMES, PRUNED_BY_PRUNER, Ending, state_counts, stop_in_words
from ee_search.records.logged_model import (
    MODEL_BEST_EPOCH_PARAM,
    MODEL_CHECKPOINT,
    MODEL_FLAVOR,
    MODEL_LOADER,
    MODEL_TRIAL_PARAM,
    MODEL_TYPE,
    model_name,
)
from ee_search.records.trial_record import (
    CREATE_TOKEN,
    FINAL_METRICS,
    OWNER_TOKEN,
    RETRY_HISTORY,
    OperatingPointRow,
    StudyRecord,
    TrialRecord,
)

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINTS",
    "EXITS",
    "FIGURES",
    "FINAL_METRICS",
    "FINISHED_STATE_NAMES",
    "PRUNED_BY_PRUNER",
    "LAST_CHECKPOINT",
    "LAST_CHECKPOINT_ALT",
    "LAST_CHECKPOINTS",
    "MODEL_BEST_EPOCH_PARAM",
    "MODEL_CHECKPOINT",
    "MODEL_FLAVOR",
    "MODEL_LOADER",
    "MODEL_TRIAL_PARAM",
    "MODEL_TYPE",
    "PARETO",
    "RETRY_HISTORY",
    "OWNER_TOKEN",
    "CREATE_TOKEN",
    "STUDY_CONFIG",
    "TRADEOFF_CSV",
    "TRADEOFF_FIGURE",
    "TRIAL_CONFIG",
    "VAL_LOGITS",
    "BestCheckpointFile",
    "CheckpointMetadata",
    "Ending",
    "OperatingPointRow",
    "StudyRecord",
    "TrialRecord",
    "ValLogitsFile",
    "file_name",
    "folder",
    "load_best_checkpoint",
    "load_val_logits",
    "model_name",
    "save_val_logits",
    "state_counts",
    "stop_in_words",
]
