"""What every layer of the runner uses: the policy it runs (config), errors and exit codes, JSON logging,
SIGTERM handling (termination), the JobSummary it leaves for the operator (summary), the count of storage
requests retried in the run (retries) and UTC timestamps."""
