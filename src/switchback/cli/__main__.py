from switchback.cli.main import main

main()
