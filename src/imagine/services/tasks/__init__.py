"""The task domain: what a task is allowed to become, and who may make it so.

- `lifecycle`: every write to a task row, one named transition each (with its ledger
  move and webhook in the same transaction). Start here.
- `service`: what routes call (create, status, wait, cancel).
- `validation`: a generate request's inputs, per model.
- `sources`: an earlier task as the input of a new one.
- `idempotency`: `Idempotency-Key` replays.
- `status`: the status view, its refresh from the provider and its cache.
- `payloads`: the answers' `data`, typed by `imagine.schemas`.
"""
