from banked.daemon.cli.main import main

main()
