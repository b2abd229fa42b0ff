from zonepurge.cli import main

main()
