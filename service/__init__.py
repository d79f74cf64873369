"""A Retell AI receptionist's back office: scheduling, messages and call records in PostgreSQL."""
