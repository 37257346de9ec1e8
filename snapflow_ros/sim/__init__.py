"""Simulated robot (Meta-World on MuJoCo, CPU): tasks, scripted experts, closed-loop evaluation."""
