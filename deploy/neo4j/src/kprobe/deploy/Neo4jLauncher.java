package kprobe.deploy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;

/**
 * Runs an embedded Neo4j with its Bolt server for kprobe's local scale-out stack.
 *
 * <p>Why a launcher: neither PyPI nor Debian carries Neo4j and the tarball site is not reachable,
 * but Maven Central has the embedded database and the Bolt connector. This class is the smallest
 * "server" on top of them: Bolt on a loopback address, authentication off (local tests only),
 * small page cache and transaction logs, and a clean shutdown on SIGTERM so the store is never left dirty.
 *
 * <p>Usage: {@code Neo4jLauncher <home-dir> <host> <bolt-port> [pagecache-MiB]}. Prints
 * {@code kprobe-neo4j: ready} once the default database answers, which deploy/stack.sh waits for.
 */
public final class Neo4jLauncher {
    private Neo4jLauncher() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: Neo4jLauncher <home-dir> <host> <bolt-port> [pagecache-MiB]");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        String host = args[1];
        int port = Integer.parseInt(args[2]);
        long pageCacheMiB = args.length > 3 ? Long.parseLong(args[3]) : 128L;
        Files.createDirectories(home);

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress(host, port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress(host, port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress(host))
                .setConfig(GraphDatabaseSettings.auth_enabled, false)
                .setConfig(GraphDatabaseSettings.pagecache_memory, pageCacheMiB * 1024L * 1024L)
                // Test data is small: 16 MiB transaction log files, not 256 MiB preallocated each.
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, 16L * 1024L * 1024L)
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "64M size")
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("kprobe-neo4j: shutting down");
            dbms.shutdown();
            stopped.countDown();
        }, "kprobe-neo4j-shutdown"));

        GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        if (!db.isAvailable(Duration.ofMinutes(5).toMillis())) {
            System.err.println("kprobe-neo4j: database did not become available");
            System.exit(1);
        }
        System.out.println("kprobe-neo4j: ready bolt://" + host + ":" + port + " home=" + home);
        System.out.flush();
        stopped.await();
    }
}
