"""A Flower app whose rounds are committed, verified and paid on fedledger."""
