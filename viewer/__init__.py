"""See the dialogues: a local web viewer over episode files, benchmark folders and training runs
(`sotopia-env view`), one-file HTML exports, and `sotopia-env play`, where a person takes a seat against a
policy. Sits above the other packages (it reads what they write); none of them imports it."""
