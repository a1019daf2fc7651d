"""invoke task modules: thin wrappers (flags, help, printing) over the workbench's logic modules."""
