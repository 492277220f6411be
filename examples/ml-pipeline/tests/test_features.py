import unittest

from churn.features import features, predict


class FeaturesTest(unittest.TestCase):
    def test_features_are_scaled_and_capped(self):
        x = features({"tenure_months": "144", "monthly_charges": "60", "support_calls": "5"})
        self.assertEqual(x, [1.0, 1.0, 0.5, 0.5])

    def test_prediction_is_a_probability(self):
        self.assertAlmostEqual(predict([0.0, 0.0, 0.0, 0.0], [1.0, 0.2, 0.3, 0.4]), 0.5)
        self.assertGreater(predict([-1.0, 0.0, 0.0, 5.0], [1.0, 0.0, 0.0, 1.0]), 0.9)


if __name__ == "__main__":
    unittest.main()
