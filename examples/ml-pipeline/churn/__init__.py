"""The churn model: features and a small logistic regression, standard library only."""
