"""Recording: the chunk format and the trajectory store (MongoDB, or an embedded file store)."""
