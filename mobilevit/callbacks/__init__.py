"""Lightning callbacks of this project."""

from mobilevit.callbacks.reports import TrainingReports

__all__ = ["TrainingReports"]
