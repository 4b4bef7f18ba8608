"""Answers a user can trust: key facts (facts.py), the refusal text and how an abstention is recognised
(refusal.py), questions the data does not answer (unanswerable.py), and the decision to abstain at answer time
(guard.py), shared by training, eval, chat, serve and export."""
