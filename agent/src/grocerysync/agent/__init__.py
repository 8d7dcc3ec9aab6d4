"""GrocerySync store agent."""
