//! hektor-cluster: the shard map and placement strategies (being written).
