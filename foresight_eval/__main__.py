from foresight_eval.cli import main

main()
