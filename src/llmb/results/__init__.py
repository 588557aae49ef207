"""Results: parsing logs of every framework, statistics, the job store, comparisons."""
