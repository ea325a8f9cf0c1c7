"""`fraudstream evaluate`: offline progressive validation of learners on a fraud stream.

- `streams`: generated or recorded streams (event times, ground truth, label arrival times).
- `replay`: serving-time features with labels fed as they arrive, and the progressive replay
  of each learner (predict, then learn once a label arrives).
- `learners`: the online River logistic model (the production pipeline), a static copy trained
  once, River's adaptive random forest, and the ADWIN drift monitor.
- `metrics`: ROC AUC, average precision, recall at a false-positive rate, precision at a daily
  review budget, alert statistics.
- `report`: segments, time windows, recovery after a drift, thresholds (the JSON report).
- `report_markdown`, `report_plot`: that report as Markdown tables and as a PNG plot.
- `run`: the command's entry point.
- `live`, `live_run`, `live_records`, `live_report`: `evaluate --live`, the same stream played
  through running `score` and `train` processes, the served scores graded beside the offline
  replay.
- `durations`: "30d", "168h", "30m", "45s" or seconds.
"""
