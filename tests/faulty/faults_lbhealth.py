FAULTS_LIST: list = []
