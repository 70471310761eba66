"""Job lifecycle: the states a job moves through and the database operations that move it."""
