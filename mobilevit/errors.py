class UserInputError(ValueError):
    """A problem in the user's input or config that they can fix; message says how."""
