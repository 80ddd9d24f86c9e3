"""The console's pages: one `APIRouter` per page, all state in `common.ConsoleContext`.

`live` (the line's verdicts and the NG gallery), `images` (heatmaps, originals,
"this part was fine", "confirmed defective"), `releases`, `retrain`, `calibration`
(the line's own thresholds), `workers`, `login`; `console.app`
includes them all.
"""
