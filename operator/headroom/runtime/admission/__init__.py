"""Admission for ScalingProfiles: the validating webhook the API server calls
before it stores a profile.

- :mod:`.review`: an AdmissionReview in, the answer out (pure: the planner);
- :mod:`.server`: the HTTPS server, in a process of its own;
- :mod:`.certificates`: the serving certificate (made, shared, renewed);
- :mod:`.registration`: the ValidatingWebhookConfiguration the leader registers;
- :mod:`.lifecycle`: what the operator process does with the four.
"""
