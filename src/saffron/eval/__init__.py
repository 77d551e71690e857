"""Evaluation harness: runs methods × budgets × prompts under an attack, writes records,
computes ASR-vs-compute metrics and plots."""
