"""The release gate: drive the live API at a target rate, check the SLOs, report and store the verdict."""
