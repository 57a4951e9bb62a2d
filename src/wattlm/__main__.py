from .cli import main

if __name__ == "__main__":  # processes started by the launcher import this module again
    main()
