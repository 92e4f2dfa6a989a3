"""The recorder: one batch's motions tracked in simulation, every attempt kept.

Modules, each importing only those above it in this list (tests/test_package_layout.py):
settings (RecordSettings, step counts), data (BatchMotion, Attempt, BatchRecording), plan
(later starts, seeds, each motion's environment and the reference), passes (what every pass
shares, the episode writer), host_pass, device_pass (the control loop on the backend's
device), planned_pass (a planner's plans replayed), batch (record_batch: every pass, in
chunks that fit the backend). Nothing is imported here, so that importing the settings
(physrec.config does) loads none of the rest.
"""
